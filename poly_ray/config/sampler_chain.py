"""Poly's sampler chains: ``samplers = ["mirostat1:n_vocab=32000"]``.

Poly hands these strings to the Rust ``llm`` crate, whose chain is built from
the llm-samplers crate; this module reads them the same way:

- entries are ``name[:key=value...]``, separated by ``/`` or spaces within a
  string and across the list; names ignore case, ``_`` and ``-``
  (``top_k`` is ``topk``, ``Mirostat-1`` is ``mirostat1``);
- a key may be cut to a prefix that is not ambiguous (``repetition:pen=1.2``),
  and a bare value sets the sampler's main parameter (``temperature:0.7``);
- llm's default chain stays where the string does not name a sampler:
  repetition (penalty 1.30 over the last 64 tokens) and temperature 0.8
  always, top-k 40 and top-p 0.95 unless a Mirostat sampler is named.

The chain becomes the task's sampling keys, which the engine applies with
llama.cpp's samplers in llm's order (penalties, top-k, locally typical, top-p,
min-p, temperature, then Mirostat or the draw). Samplers llama.cpp does not
have (tail free, top-a, sequence repetition) are refused with the nearest one.
"""

from __future__ import annotations

_COUNTS = {"top_k", "repetition_penalty_last_n", "mirostat_m", "mirostat_n_vocab", "min_keep"}

# name -> (main parameter, {llm-samplers key: task field}); keys match by unambiguous prefix.
_SAMPLERS: dict[str, tuple[str | None, dict[str, str]]] = {
    "repetition": ("penalty", {"penalty": "repeat_penalty", "last_n": "repetition_penalty_last_n"}),
    "freqpresence": (None, {"frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
                            "last_n": "repetition_penalty_last_n"}),
    "topk": ("k", {"k": "top_k", "min_keep": "min_keep"}),
    "locallytypical": ("p", {"p": "typical_p", "min_keep": "min_keep"}),
    "topp": ("p", {"p": "top_p", "min_keep": "min_keep"}),
    "minp": ("p", {"p": "min_p", "min_keep": "min_keep"}),
    "temperature": ("temperature", {"temperature": "temperature"}),
    "mirostat1": (None, {"tau": "mirostat_tau", "eta": "mirostat_eta", "mu": "mirostat_mu", "m": "mirostat_m",
                         "n_vocab": "mirostat_n_vocab"}),
    "mirostat2": (None, {"tau": "mirostat_tau", "eta": "mirostat_eta", "mu": "mirostat_mu"}),
    "greedy": (None, {}),  # not an llm-samplers slot: the most likely token
    "randdistrib": (None, {}),  # llm's final draw, always there
}
# Short names this server took before it read llm's rules; they stay.
_ALIASES = {"temp": "temperature", "mirostat": "mirostat1", "repeat": "repetition", "typical": "locallytypical"}
_KEY_ALIASES = {"n": "last_n", "t": "temperature", "f": "frequency_penalty"}
_MISSING = {
    "tailfree": "llama.cpp has no tail-free sampling any more; use minp or locallytypical",
    "topa": "llama.cpp has no top-a sampler; minp keeps tokens relative to the best one in the same way",
    "seqrepetition": "llama.cpp has no sequence-repetition sampler; use repetition or freqpresence",
    "flatbias": "a flat bias is not configurable in a chain; use a biaser (JSON schema) instead",
}
# llm's defaults (crates/llm-base/src/samplers.rs): kept unless the chain names the sampler.
_DEFAULTS = {"repeat_penalty": 1.30, "repetition_penalty_last_n": 64, "temperature": 0.8}
_DEFAULTS_NO_MIROSTAT = {"topk": ("top_k", 40), "topp": ("top_p", 0.95)}
# What the samplers a chain leaves out (and llm does not add) mean.
_OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "frequency_penalty": 0.0,
        "presence_penalty": 0.0, "mirostat": 0}


def _name(raw: str) -> str:
    name = raw.strip().lower().replace("_", "").replace("-", "")
    return _ALIASES.get(name, name)


def _key(sampler: str, raw: str, keys: dict[str, str], entry: str) -> str:
    raw = _KEY_ALIASES.get(raw, raw)
    if raw in keys:
        return raw
    found = [k for k in keys if k.startswith(raw)] if raw else []
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"samplers: {raw!r} is ambiguous for {sampler!r} ({', '.join(found)}) in {entry!r}")
    known = ", ".join(keys) or "none"
    raise ValueError(f"samplers: {sampler!r} has no parameter {raw!r} (in {entry!r}; it has: {known})")


def parse(chains: list[str]) -> dict:
    """Task field values for a chain; ValueError says which entry is wrong and why."""
    values: dict = dict(_OFF)
    seen: list[str] = []
    setters: dict[str, tuple[str, float]] = {}
    entries = [e for chain in chains for part in chain.split("/") for e in part.split() if e.strip()]
    if not entries:
        raise ValueError("samplers: the chain is empty")
    for entry in entries:
        name, *params = entry.split(":")
        name = _name(name)
        if name in _MISSING:
            raise ValueError(f"samplers: {name!r} (in {entry!r}): {_MISSING[name]}")
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
        for param in (p.strip() for p in params):
            if not param:
                continue
            key, eq, raw = param.partition("=")
            key = key.strip() if eq else (main or "")
            if not eq:
                raw = param
            if not key:
                raise ValueError(f"samplers: {name!r} needs key=value (in {entry!r}; it has: {', '.join(keys) or 'none'})")
            field = keys[_key(name, key, keys, entry)]
            try:
                number = float(raw)
            except ValueError:
                raise ValueError(f"samplers: {raw.strip()!r} is not a number (in {entry!r})") from None
            if field in _COUNTS:
                if number != int(number) or number < 0:
                    raise ValueError(f"samplers: {raw.strip()!r} must be a whole number (in {entry!r})")
                number = int(number)
            # last_n and min_keep are one setting here, shared by the samplers that have them.
            if field in setters and setters[field] != (name, number) and setters[field][1] != number:
                raise ValueError(f"samplers: {entry!r} sets {field} to {raw.strip()}, "
                                 f"but {setters[field][0]!r} set it to {setters[field][1]:g}; use one value")
            setters[field] = (name, number)
            values[field] = number
    mirostat = values["mirostat"]
    if "mirostat1" in seen and "mirostat2" in seen:
        raise ValueError("samplers: mirostat1 and mirostat2 cannot both be in a chain")
    if mirostat and {"topk", "topp", "minp", "locallytypical"} & set(seen):
        raise ValueError("samplers: mirostat replaces topk, topp, minp and locallytypical; use one or the other")
    if "greedy" in seen and {"temperature", "mirostat1", "mirostat2"} & set(seen):
        raise ValueError("samplers: greedy takes the most likely token; it has no temperature or mirostat")
    if "mirostat_mu" in values:
        # llama.cpp starts mu at 2 * tau (llm-samplers' default too: 10 for tau 5) and cannot be told otherwise.
        tau = values.get("mirostat_tau", 5.0)
        if values.pop("mirostat_mu") != 2 * tau:
            raise ValueError(f"samplers: mirostat's mu starts at 2 * tau ({2 * tau:g}) in llama.cpp; leave mu out")
    for field, value in _DEFAULTS.items():
        values.setdefault(field, value)
    if not mirostat:
        for sampler, (field, value) in _DEFAULTS_NO_MIROSTAT.items():
            if sampler not in seen:
                values[field] = value
    return values
