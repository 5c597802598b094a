"""A loopback stand-in for the Hugging Face hub, for offline tests of staging and pre-fetch.

It speaks the few endpoints the trusted side calls through huggingface_hub (pointed at it
with HF_ENDPOINT):

    GET  /api/{models,datasets}/OWNER/NAME[/revision/REV][?blobs=true]
         repo info: commit sha, siblings (with size, blobId and lfs.sha256 when blobs=true)
    HEAD, GET /OWNER/NAME/resolve/REV/PATH, /datasets/OWNER/NAME/resolve/REV/PATH
         the file, with the headers hf_hub_download needs (X-Repo-Commit, ETag or
         X-Linked-Etag/X-Linked-Size for LFS files, Content-Length) and byte ranges

and answers errors as the hub does (X-Error-Code RepoNotFound / RevisionNotFound /
EntryNotFound). `datasets` itself never talks to it: the trusted side downloads files,
and the task process reads them from a local folder. Repos live in memory; a private repo
answers only requests carrying its token. The server listens on 127.0.0.1 unless given
another local address (`host`: the Docker bridge's gateway, for programs in containers),
answers at most `max_requests` requests and stops by itself after `lifetime` seconds.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".arrow")


@dataclass
class Repo:
    """Files of one repo at one commit; `token` makes it private; `corrupt` names files
    whose served bytes differ from their listed hash (a damaged transfer)."""

    files: dict[str, bytes]
    token: str | None = None
    corrupt: set[str] = field(default_factory=set)

    @property
    def sha(self) -> str:
        h = hashlib.sha1()  # noqa: S324 - a stand-in commit id
        for path in sorted(self.files):
            h.update(path.encode() + b"\0" + self.files[path])
        return h.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def sibling(self, path: str, blobs: bool) -> dict:
        data = self.files[path]
        out: dict = {"rfilename": path}
        if blobs:
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324
            out.update(size=len(data), blobId=blob)
            if self.is_lfs(path):
                out["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                              "pointerSize": 134}
        return out


@dataclass
class Hit:
    method: str
    path: str
    auth: str | None


class StubHub:
    """The server; `repos[(kind, "OWNER/NAME")]` with kind `model` or `dataset`."""

    def __init__(self, max_requests: int = 20000, lifetime: float = 1800.0,
                 host: str = "127.0.0.1"):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.hits: list[Hit] = []
        self.max_requests = max_requests
        self.stopped = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def add(self, kind: str, repo_id: str, repo: Repo) -> Repo:
        self.repos[(kind, repo_id)] = repo
        return repo

    def stop(self) -> None:
        self.stopped = True  # connections kept alive by clients get 503 from now on
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def reset_hits(self) -> None:
        with self._lock:
            self.hits.clear()

    def downloads(self) -> list[str]:
        """Paths of the files served (GET on resolve)."""
        return [h.path for h in self.hits if h.method == "GET" and "/resolve/" in h.path]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: tests read `hub.hits`
                pass

            def do_GET(self) -> None:
                self._serve(body=True)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def _serve(self, body: bool) -> None:
                with hub._lock:
                    hub.hits.append(Hit(self.command, self.path,
                                        self.headers.get("Authorization")))
                    over = hub.stopped or len(hub.hits) > hub.max_requests
                if over:
                    self.close_connection = True
                    return self._send(503, b"the stand-in hub has stopped")
                url = urlparse(self.path)
                path = unquote(url.path)
                api = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/(.+))?",
                                   path)
                if api:
                    return self._info(api.group(1)[:-1], api.group(2), api.group(3),
                                      "blobs" in parse_qs(url.query), body)
                res = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if res:
                    kind = "dataset" if res.group(1) else "model"
                    return self._file(kind, res.group(2), res.group(3), res.group(4), body)
                self._send(404, b"not found", {"X-Error-Code": "EntryNotFound"})

            def _repo(self, kind: str, repo_id: str, rev: str | None) -> Repo | None:
                repo = hub.repos.get((kind, repo_id))
                auth = self.headers.get("Authorization") or ""
                if repo is None or (repo.token and auth != f"Bearer {repo.token}"):
                    self._send(401 if repo else 404, b"repository not found",
                               {"X-Error-Code": "RepoNotFound"})
                    return None
                if rev not in (None, "main", repo.sha):
                    self._send(404, b"revision not found", {"X-Error-Code": "RevisionNotFound"})
                    return None
                return repo

            def _info(self, kind: str, repo_id: str, rev: str | None, blobs: bool,
                      body: bool) -> None:
                repo = self._repo(kind, repo_id, rev)
                if repo is None:
                    return
                doc = {"id": repo_id, "sha": repo.sha, "private": bool(repo.token),
                       "lastModified": "2025-01-01T00:00:00.000Z",
                       "siblings": [repo.sibling(p, blobs) for p in sorted(repo.files)]}
                self._send(200, json.dumps(doc).encode(),
                           {"Content-Type": "application/json"}, body)

            def _file(self, kind: str, repo_id: str, rev: str, path: str, body: bool) -> None:
                repo = self._repo(kind, repo_id, rev)
                if repo is None:
                    return
                if path not in repo.files:
                    return self._send(404, b"entry not found", {"X-Error-Code": "EntryNotFound"})
                data = repo.files[path]
                info = repo.sibling(path, blobs=True)
                etag = info["lfs"]["sha256"] if "lfs" in info else info["blobId"]
                headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{etag}"',
                           "Accept-Ranges": "bytes"}
                if "lfs" in info:
                    headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
                if path in repo.corrupt:
                    data = bytes(b ^ 0xFF for b in data[:1]) + data[1:]
                status = 200
                rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if rng and body:
                    start = int(rng.group(1))
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    data, status = data[start:], 206
                self._send(status, data, headers, body)

            def _send(self, status: int, data: bytes, headers: dict | None = None,
                      body: bool = True) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(data)

        return Handler



def go_online(monkeypatch, hub: StubHub) -> StubHub:
    """Point this process (the trusted side) at the stand-in hub, even though the test
    session sets HF_HUB_OFFLINE=1 (which task processes keep)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub.reset_hits()
    return hub
