"""The one place that talks to DNS servers."""
