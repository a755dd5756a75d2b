"""The Assistants API (v2): assistants, threads, messages, runs, over the state store."""
