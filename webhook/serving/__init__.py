"""The wire and the process: AdmissionReview in and out, HTTPS, connections, metrics, OpenAPI.

`review` reads and writes the AdmissionReview, `endpoint` bounds each request's time and memory,
`app` routes /mutate, /validate and /guard to `webhook.admission`, `connections` is the TLS
listener and its limits, `server` runs it all with the node view and the probes.
See docs/architecture.md.
"""
