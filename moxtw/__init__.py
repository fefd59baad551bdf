"""moxtw: a mail daemon for applications, wire-compatible with mox's webapi v0 and webhooks."""

__version__ = "0.1.0.dev0"
