"""A local HTTP server that answers huggingface_hub as the hub does for LFS files:
HEAD and GET of /{author}/{repo}/resolve/{revision}/{path} with the commit, the
file's sha256 as its etag, and its size. Point HF_ENDPOINT at ``url``."""

import http.server
import threading


class FakeHub:
    def __init__(self):
        self.files = {}  # (repo, revision, path) -> (commit, body, sha256 announced)
        self.hits = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, with_body: bool):
                hub.hits.append((self.command, self.path))
                parts = self.path.lstrip("/").split("/")
                entry = None
                if len(parts) >= 5 and parts[2] == "resolve":
                    entry = hub.files.get((f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])))
                if entry is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                commit, body, etag = entry
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(body)))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def close(self):
        self._server.shutdown()
        self._server.server_close()
