"""Poly's sampler chains: ``samplers = ["topk:k=40/topp:p=0.9/temperature:0.7"]``.

Entries are ``name[:key=value...]`` (a bare value sets the sampler's main
parameter: ``temperature:0.7``), separated by ``/`` within a string and across
the list. A chain names every sampler the task uses: the ones it leaves out
are off. It becomes the task's standard sampling keys, which llama.cpp's
samplers then apply in their fixed order (penalties, top-k, top-p, min-p,
temperature, then the draw).
"""

from __future__ import annotations

# name -> (main parameter, {accepted key or alias: task field})
_SAMPLERS: dict[str, tuple[str | None, dict[str, str]]] = {
    "repetition": ("penalty", {"penalty": "repeat_penalty", "p": "repeat_penalty",
                               "last_n": "repetition_penalty_last_n", "n": "repetition_penalty_last_n"}),
    "freqpresence": (None, {"frequency_penalty": "frequency_penalty", "f": "frequency_penalty",
                            "presence_penalty": "presence_penalty", "p": "presence_penalty",
                            "last_n": "repetition_penalty_last_n"}),
    "topk": ("k", {"k": "top_k"}),
    "topp": ("p", {"p": "top_p"}),
    "minp": ("p", {"p": "min_p"}),
    "temperature": ("temperature", {"temperature": "temperature", "t": "temperature"}),
    "mirostat1": (None, {"tau": "mirostat_tau", "eta": "mirostat_eta"}),
    "mirostat2": (None, {"tau": "mirostat_tau", "eta": "mirostat_eta"}),
    "greedy": (None, {}),
}
_ALIASES = {"temp": "temperature", "top_k": "topk", "top_p": "topp", "min_p": "minp", "mirostat": "mirostat1",
            "repeat": "repetition"}
# What a chain that leaves a sampler out means.
_OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "frequency_penalty": 0.0,
        "presence_penalty": 0.0, "temperature": 1.0, "mirostat": 0}


def parse(chains: list[str]) -> dict:
    """Task field values for a chain; ValueError says which entry is wrong and why."""
    values: dict = dict(_OFF)
    seen: list[str] = []
    entries = [e.strip() for chain in chains for e in chain.split("/") if e.strip()]
    if not entries:
        raise ValueError("samplers: the chain is empty")
    for entry in entries:
        name, *params = entry.split(":")
        name = _ALIASES.get(name.strip().lower(), name.strip().lower())
        if name not in _SAMPLERS:
            raise ValueError(f"samplers: unknown sampler {name!r} in {entry!r} (known: {', '.join(_SAMPLERS)})")
        if name in seen:
            raise ValueError(f"samplers: {name!r} appears twice")
        seen.append(name)
        main, keys = _SAMPLERS[name]
        if name.startswith("mirostat"):
            values["mirostat"] = int(name[-1])
        if name == "greedy":
            values["temperature"] = 0.0
        for param in params:
            key, eq, raw = param.partition("=")
            if not eq:
                key, raw = main, key
            if key is None or key.strip() not in keys:
                raise ValueError(f"samplers: {name!r} has no parameter {key!r} (in {entry!r})")
            try:
                number = float(raw)
            except ValueError:
                raise ValueError(f"samplers: {raw!r} is not a number (in {entry!r})") from None
            field = keys[key.strip()]
            values[field] = int(number) if field in ("top_k", "repetition_penalty_last_n") else number
    if values["mirostat"] and {"topk", "topp", "minp"} & set(seen):
        raise ValueError("samplers: mirostat replaces topk, topp and minp; use one or the other")
    if "greedy" in seen and {"temperature", "mirostat1", "mirostat2"} & set(seen):
        raise ValueError("samplers: greedy takes the most likely token; it has no temperature or mirostat")
    return values
