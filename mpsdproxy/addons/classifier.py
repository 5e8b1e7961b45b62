"""Classifier: what the title actually got, explained by a row of the status table.

Runs after every addon that can answer or rewrite a response (replay, fault
injection), so the classification always describes what reached the title.
mitmweb shows it too: the flow's comment holds the row and who answered
(`412.if-match-session · injected by rule stale-etag-on-join`), and injected
or anomalous flows are marked, so an injected 503 never passes for a real one.
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


#: mitmproxy's own mark (a red dot in mitmweb's list).
MARK = ":default:"


class StatusClassifier:
    def response(self, flow: http.HTTPFlow) -> None:
        info = flow.metadata.get(common.KEY)
        if info is None or "classification" in info:
            return
        classification = classify_flow(flow)
        info["classification"] = classification.to_dict()
        provenance = common.provenance(flow)
        flow.comment = (f"{classification.id or 'not in the status table'}"
                        f" · {common.provenance_text(provenance)}")
        if provenance.get("source") == "injected" or classification.anomalies:
            flow.marked = MARK

    def error(self, flow: http.HTTPFlow) -> None:
        self.response(flow)
