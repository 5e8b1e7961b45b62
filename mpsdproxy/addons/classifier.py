"""Classifier: what the title actually got, explained by a row of the status table.

Runs after every addon that can answer or rewrite a response (replay, fault
injection), so the classification always describes what reached the title.
"""

from __future__ import annotations

from mitmproxy import http

from mpsdproxy import classify
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons.flows import complete_response

__all__ = ["StatusClassifier", "classify_flow", "complete_response"]


def classify_flow(flow: http.HTTPFlow) -> classify.Classification:
    """Classify a finished flow; a flow without a complete response is `no-response`."""
    return classify.classify(flows.exchange_of(flow))


class StatusClassifier:
    def response(self, flow: http.HTTPFlow) -> None:
        info = flow.metadata.get(common.KEY)
        if info is not None and "classification" not in info:
            info["classification"] = classify_flow(flow).to_dict()

    def error(self, flow: http.HTTPFlow) -> None:
        self.response(flow)
