"""Offline evaluation: what the canary computes for a candidate and its champion, and the
gate's rules (`canary`)."""
