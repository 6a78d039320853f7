"""Running the server as a service: request ids and structured logs, Prometheus metrics, health probes."""
