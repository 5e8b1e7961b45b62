"""Classifier: what the title actually got, explained by a row of the status table.

Runs after every addon that can answer or rewrite a response (replay, fault
injection), so the classification always describes what reached the title.
"""

from __future__ import annotations

from mitmproxy import http

from mpsdproxy import classify
from mpsdproxy.addons import common


def complete_response(flow: http.HTTPFlow) -> http.Response | None:
    """The response the title fully received, or None (none, or cut off mid-body)."""
    response = flow.response
    if response is None or response.raw_content is None:
        return None
    return response


def classify_flow(flow: http.HTTPFlow) -> classify.Classification:
    """Classify a finished flow; a flow without a complete response is `no-response`."""
    request = flow.request
    response = complete_response(flow)
    if response is None:
        return classify.NO_RESPONSE
    return classify.classify(
        request.method,
        request.path,
        request.headers,
        response.status_code,
        response.headers,
        common.content(response),
    )


class StatusClassifier:
    def response(self, flow: http.HTTPFlow) -> None:
        info = flow.metadata.get(common.KEY)
        if info is not None and "classification" not in info:
            info["classification"] = classify_flow(flow).to_dict()

    def error(self, flow: http.HTTPFlow) -> None:
        self.response(flow)
