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


def main() -> None:
    path, memory = sys.argv[1], int(sys.argv[2])
    spec = importlib.util.spec_from_file_location("_poly_ray_llama_grammar", path)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
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
