"""The child side of ``isolated``: llama-cpp-python's schema converter, under a memory limit.

Run as a script (``python _worker.py CONVERTER_PATH MEMORY_BYTES``), so it imports nothing
but the standard library and the converter's own pure-Python file (not llama_cpp's C
library). It reads one request per line, ``{"schema": …, "max_bytes": …}``, and answers
one line: ``{"grammar": …}``, ``{"too_big": bytes}``, ``{"error": …}`` or ``{"memory": true}``.
"""

import importlib.util
import json
import resource
import sys

# A JSON string's character as JSON has it, and as llama.cpp's own converter writes it: no
# control characters unescaped. The converter shipped with llama-cpp-python lets any through,
# so a model could write a raw newline inside a string and the "valid" JSON failed to parse.
STRICT_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


def main() -> None:
    path, memory = sys.argv[1], int(sys.argv[2])
    spec = importlib.util.spec_from_file_location("_poly_ray_llama_grammar", path)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    converter.PRIMITIVE_RULES["char"] = converter.BuiltinRule(STRICT_CHAR, [])
    with open("/proc/self/statm") as f:  # the limit is headroom over what the interpreter already maps
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + memory, mapped + memory))
    for line in sys.stdin:
        try:
            request = json.loads(line)
            grammar = converter.json_schema_to_gbnf(request["schema"])
            answer = {"too_big": len(grammar)} if len(grammar) > request["max_bytes"] else {"grammar": grammar}
        except MemoryError:
            answer = {"memory": True}
        except RecursionError:
            answer = {"error": "recursion"}
        except Exception as e:  # the converter's asserts and ValueErrors: its message, for the 400
            answer = {"error": f"{type(e).__name__}: {e}"}
        grammar = None
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
