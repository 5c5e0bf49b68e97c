"""Listeners: dual stack, implicit TLS, the PROXY protocol, connection limits,
and the environment tcpserver would give each connection."""
