"""Coming from the servers poly-ray replaces: the Rust `/stream` server's flags
(``run``), llm-api's and Poly's config files (``import``). Nothing here runs at serve
time: each turns what the other server took into poly-ray's config."""
