"""The running server: listeners, one SMTP connection driver per client,
the queue.  The one layer that wires the others together (with `cli`)."""
