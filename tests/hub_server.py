"""A small Hub-compatible HTTP server on 127.0.0.1, for pushing and pulling with the real client.

It answers exactly the requests that `huggingface_hub` 2.4 makes for `create_repo`, `create_branch`,
`create_commit` / `upload_folder` (preupload, README metadata check, LFS batch + PUT + verify, NDJSON
commit), `repo_info`, `list_repo_tree`, `hf_hub_download` and `snapshot_download` (HEAD/GET
`/resolve`). Everything lives in memory. The shapes come from the client source (hf_api.py,
_commit_api.py, lfs.py, file_download.py, _snapshot_download.py), not from the real Hub's docs.

What it deliberately does not do:
- Xet. The preupload answer is "lfs" for weights and the resolve headers carry no `X-Xet-Hash`, so
  downloads use plain HTTP. Uploads are another story: the 2.4 client picks Xet on its own whenever
  `hf_xet` is installed (`_commit_api._upload_files`, `hf_api.upload_folder`) and never asks the
  server, so a client must set `HF_HUB_DISABLE_XET` to reach the LFS path here. The Xet token routes
  answer 501 so that a Xet attempt fails at once instead of hanging.
- Pull requests, tags, deletions of whole repos, pagination (one page holds every file).

Writes need `Authorization: Bearer <token>` with a token from `HubServer.tokens`; reads of public
repos do not. Every request is recorded in `HubServer.requests` so tests can check which path the
client took (for instance that the weights went through the LFS PUT).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".gguf")
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores anything above 10 MB in LFS as well


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub calls a file's `oid` and its regular ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class RepoFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """Git oid: of the content for regular files, of the pointer for LFS files (as git sees it)."""
        return git_blob_sha1(lfs_pointer(self.sha256, len(self.data)) if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    commits: dict[str, dict[str, RepoFile]] = field(default_factory=dict)  # commit oid -> files

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


@dataclass
class Request:
    method: str
    path: str
    authorized: bool


class HubServer:
    """State and lifecycle of the loopback Hub. Use `start()` / `stop()` or `with HubServer() as hub:`."""

    def __init__(self, tokens: tuple[str, ...] = ("hf_test_token",)):
        self.tokens = set(tokens)
        self.repos: dict[str, Repo] = {}
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> content, shared by all repos like a CAS
        self.upload_urls: dict[str, str] = {}  # one-time secret in the PUT url -> sha256 expected
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of `repo_id` at `revision`, for assertions."""
        repo = self.repos[repo_id]
        return {path: f.data for path, f in repo.commits[repo.resolve(revision)].items()}

    def lfs_files(self, repo_id: str, revision: str = "main") -> set[str]:
        repo = self.repos[repo_id]
        return {path for path, f in repo.commits[repo.resolve(revision)].items() if f.lfs}

    def requests_matching(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # --- writes, called by the handler under self.lock ---

    def create_commit(self, repo: Repo, branch: str, lines: list[dict]) -> str:
        parent = repo.branches[branch]
        files = dict(repo.commits[parent]) if parent else {}
        summary = ""
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                files[value["path"]] = RepoFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_store:
                    raise KeyError(f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = RepoFile(self.lfs_store[value["oid"]], lfs=True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(prefix)}
        listing = "".join(f"{p} {f.oid}\n" for p, f in sorted(files.items()))
        oid = hashlib.sha1(f"parent {parent}\n{summary}\n{listing}".encode()).hexdigest()
        repo.commits[oid] = files
        repo.branches[branch] = oid
        return oid


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    routes = []  # (method, compiled path regex, handler function), first match wins

    def route(method: str, pattern: str):
        def register(fn):
            routes.append((method, re.compile(pattern + r"$"), fn))
            return fn

        return register

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every response sets Content-Length

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        # --- plumbing ---

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            self.body = self._read_body()
            with hub.lock:
                hub.requests.append(Request(method, unquote(url.path), self._token_ok()))
            for verb, regex, fn in routes:
                match = regex.match(url.path)  # match the raw path: a quoted revision may hold a "/"
                if (verb == method or (verb == "GET" and method == "HEAD")) and match:
                    groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    try:
                        return fn(self, **groups)
                    except Exception as err:  # a bug in the fake: say so instead of hanging the client
                        return self._json(500, {"error": f"hub_server: {type(err).__name__}: {err}"})
            self._json(404, {"error": f"hub_server: no route for {method} {url.path}"})

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _token_ok(self) -> bool:
            auth = self.headers.get("Authorization", "")
            return auth.startswith("Bearer ") and auth[len("Bearer ") :] in hub.tokens

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
            headers = {"Content-Type": "application/json", **(headers or {})}
            self._send(status, json.dumps(payload).encode(), headers)

        def _require_token(self) -> bool:
            if self._token_ok():
                return True
            missing = "Authorization" not in self.headers
            message = "A token is required: send Authorization: Bearer <token>" if missing else (
                "Invalid credentials in Authorization header"
            )
            self._json(401, {"error": message}, {"X-Error-Message": message})
            return False

        def _repo(self, repo_id: str, write: bool = False) -> Repo | None:
            """The repo, or None after answering 401/404 (private repos read like missing ones)."""
            if write and not self._require_token():
                return None
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._token_ok()):
                self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return None
            return repo

        def _commit(self, repo: Repo, revision: str) -> str | None:
            oid = repo.resolve(revision)
            if oid is None:
                self._json(404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"})
            return oid

        # --- repos and branches ---

        @route("POST", r"/api/repos/create")
        def create_repo(self):
            if not self._require_token():
                return
            payload = json.loads(self.body)
            repo_id = f"{payload['organization']}/{payload['name']}"
            with hub.lock:
                if repo_id in hub.repos:
                    conflict = {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
                    return self._json(409, conflict)
                repo = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
                # The Hub starts every repo with an initial commit (a .gitattributes file).
                repo.branches["main"] = ""
                gitattributes = base64.b64encode(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n").decode()
                initial = {"key": "file", "value": {"path": ".gitattributes", "content": gitattributes}}
                hub.create_commit(repo, "main", [initial])
                hub.repos[repo_id] = repo
            self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

        @route("GET", rf"/api/models/{REPO}(?:/revision/(?P<revision>[^/]+))?")
        def repo_info(self, repo, revision=None):
            info = self._repo(repo)
            if info is None or (oid := self._commit(info, revision or "main")) is None:
                return
            siblings = [{"rfilename": p} for p in sorted(info.commits[oid])]
            self._json(200, {"id": repo, "modelId": repo, "sha": oid, "private": info.private, "siblings": siblings})

        @route("POST", rf"/api/models/{REPO}/branch/(?P<branch>[^/]+)")
        def create_branch(self, repo, branch):
            info = self._repo(repo, write=True)
            if info is None:
                return
            start = json.loads(self.body or b"{}").get("startingPoint", "main")
            with hub.lock:
                if branch in info.branches:
                    return self._json(409, {"error": f"Reference already exists: refs/heads/{branch}"})
                if (oid := self._commit(info, start)) is not None:
                    info.branches[branch] = oid
                    self._json(200, {})

        @route("GET", rf"/api/models/{REPO}/refs")
        def list_refs(self, repo):
            info = self._repo(repo)
            if info is not None:
                branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in info.branches.items()]
                self._json(200, {"branches": branches, "tags": [], "converts": []})

        @route("GET", rf"/api/models/{REPO}/tree/(?P<revision>[^/]+)(?:/(?P<subpath>.+))?")
        def list_tree(self, repo, revision, subpath=None):
            info = self._repo(repo)
            if info is None or (oid := self._commit(info, revision)) is None:
                return
            entries = []
            for path, f in sorted(info.commits[oid].items()):
                if subpath and not path.startswith(subpath.rstrip("/") + "/"):
                    continue
                entry = {"type": "file", "path": path, "size": len(f.data), "oid": f.oid}
                if f.lfs:
                    pointer_size = len(lfs_pointer(f.sha256, len(f.data)))
                    entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": pointer_size}
                entries.append(entry)
            self._json(200, entries)

        @route("GET", rf"/api/models/{REPO}/xet-(?P<kind>read|write)-token(?:/.*)?")
        def xet_token(self, repo, kind):
            self._json(501, {"error": "This server does not support Xet storage: upload with HF_HUB_DISABLE_XET=1"})

        # --- uploads ---

        @route("POST", r"/api/validate-yaml")
        def validate_yaml(self):
            self._json(200, {"errors": [], "warnings": []})

        @route("POST", rf"/api/models/{REPO}/preupload/(?P<revision>[^/]+)")
        def preupload(self, repo, revision):
            info = self._repo(repo, write=True)
            if info is None or (oid := self._commit(info, revision)) is None:
                return
            existing = info.commits[oid]
            answers = []
            for f in json.loads(self.body)["files"]:
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > LFS_THRESHOLD
                remote = existing.get(f["path"])
                remote_oid = None if remote is None else (remote.sha256 if remote.lfs else remote.oid)
                mode = "lfs" if lfs else "regular"
                answers.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": remote_oid})
            self._json(200, {"files": answers, "commitOid": oid})

        @route("POST", rf"/{REPO}\.git/info/lfs/objects/batch")
        def lfs_batch(self, repo):
            if self._repo(repo, write=True) is None:
                return
            payload = json.loads(self.body)
            objects = []
            for obj in payload["objects"]:
                answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                with hub.lock:
                    if obj["oid"] not in hub.lfs_store:
                        secret = secrets.token_hex(8)  # the PUT carries no Authorization, like a presigned S3 url
                        hub.upload_urls[secret] = obj["oid"]
                        answer["actions"] = {
                            "upload": {"href": f"{hub.url}/lfs-upload/{secret}"},
                            "verify": {"href": f"{hub.url}/{repo}.git/info/lfs/objects/verify"},
                        }
                objects.append(answer)
            self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                       {"Content-Type": "application/vnd.git-lfs+json"})

        @route("PUT", r"/lfs-upload/(?P<secret>[0-9a-f]+)")
        def lfs_put(self, secret):
            with hub.lock:
                expected = hub.upload_urls.pop(secret, None)
                if expected is None:
                    return self._json(403, {"error": "Unknown or used upload url"})
                if hashlib.sha256(self.body).hexdigest() != expected:
                    return self._json(400, {"error": "Uploaded content does not match its sha256"})
                hub.lfs_store[expected] = self.body
            self._send(200, b"", {"ETag": f'"{expected}"'})

        @route("POST", rf"/{REPO}\.git/info/lfs/objects/verify")
        def lfs_verify(self, repo):
            if self._repo(repo, write=True) is None:
                return
            payload = json.loads(self.body)
            stored = hub.lfs_store.get(payload["oid"])
            if stored is None or len(stored) != payload["size"]:
                return self._json(404, {"error": f"LFS object {payload['oid']} not found"})
            self._json(200, {"oid": payload["oid"], "size": payload["size"]})

        @route("POST", rf"/api/models/{REPO}/commit/(?P<revision>[^/]+)")
        def commit(self, repo, revision):
            info = self._repo(repo, write=True)
            if info is None:
                return
            if revision not in info.branches:
                return self._json(404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"})
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            with hub.lock:
                try:
                    oid = hub.create_commit(info, revision, lines)
                except KeyError as err:
                    return self._json(422, {"error": str(err.args[0])})
            self._json(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None})

        # --- downloads ---

        @route("GET", rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<filename>.+)")
        def resolve(self, repo, revision, filename):
            info = self._repo(repo)
            if info is None or (oid := self._commit(info, revision)) is None:
                return
            f = info.commits[oid].get(filename)
            if f is None:
                headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": oid}
                return self._json(404, {"error": "Entry not found"}, headers)
            headers = {"X-Repo-Commit": oid, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if f.lfs:
                headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data))})
            data = f.data
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if match:  # resumed downloads
                start, end = int(match[1]), int(match[2] or len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(206, data[start : end + 1], headers)
            self._send(200, data, headers)

    return Handler
