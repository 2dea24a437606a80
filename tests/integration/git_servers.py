"""Loopback git servers for the image builder's integration tests (helpers and fixtures, no tests).

- `GitRepo`: a work tree (made with `git init`, committed with a fixed identity) pushed to a bare
  repository under a served root, so every commit is visible to clients at once.
- `git_daemon`: `git daemon` on 127.0.0.1:<free port> serving its root over git://, anonymously.
- `git_http`: a tiny HTTP server on 127.0.0.1:<free port> that requires HTTP Basic auth and runs
  `git http-backend` as CGI (the smart HTTP protocol), i.e. a private repository host.

Both fixtures are module-scoped and stop their servers at teardown.
"""

from __future__ import annotations

import base64
import hmac
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

GIT_IDENTITY = ("-c", "user.name=racetrackd tests", "-c", "user.email=tests@example.com")
HTTP_USERNAME = "rtd-tester"
HTTP_PASSWORD = "s3cr3t-Pa55w0rd-e7b1c9"  # distinctive, so a leak is easy to find in any output


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git (fixed identity, no prompts, no user/system config) and return its stdout."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    result = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclass
class GitRepo:
    """A work tree whose commits are pushed to `bare` (the served copy)."""

    work: Path
    bare: Path

    @classmethod
    def create(cls, root: Path, name: str, files: dict[str, str | bytes], branch: str = "main") -> GitRepo:
        """A new repository `root/<name>.git` whose default branch `branch` holds `files`."""
        work = root.parent / f"{root.name}-work" / name
        work.mkdir(parents=True)
        git("init", "--quiet", "-b", branch, cwd=work)
        bare = root / f"{name}.git"
        git("init", "--quiet", "--bare", "-b", branch, str(bare))
        git("remote", "add", "origin", str(bare), cwd=work)
        repo = cls(work, bare)
        repo.commit(files, "initial commit", branch)
        return repo

    def commit(self, files: dict[str, str | bytes], message: str, branch: str | None = None) -> str:
        """Write `files` (paths relative to the repository) on `branch` (created from the current
        one when new), commit, push; returns the commit's SHA."""
        if branch is not None:
            existing = git("branch", "--list", branch, cwd=self.work).strip()
            if git("symbolic-ref", "--short", "HEAD", cwd=self.work).strip() != branch:
                git("checkout", "--quiet", *(() if existing else ("-b",)), branch, cwd=self.work)
        for relative, content in files.items():
            path = self.work / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        current = git("symbolic-ref", "--short", "HEAD", cwd=self.work).strip()
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{current}", cwd=self.work)
        return self.head()

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work).strip()

    def checkout(self, branch: str) -> None:
        git("checkout", "--quiet", branch, cwd=self.work)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class GitServer:
    root: Path  # repositories live here as <name>.git
    url: str  # clone URL of <name> is f"{url}/{name}.git"
    username: str | None = None
    password: str | None = None

    def create_repo(self, name: str, files: dict[str, str | bytes], branch: str = "main") -> GitRepo:
        return GitRepo.create(self.root, name, files, branch)

    def remote(self, name: str) -> str:
        return f"{self.url}/{name}.git"


# --- git:// ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def git_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """`git daemon` serving a fresh root anonymously on git://127.0.0.1:<port>."""
    root = tmp_path_factory.mktemp("git-daemon-root")
    port = free_port()
    log = (root.parent / "git-daemon.log").open("wb")
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={root}",
            "--export-all",
            "--informative-errors",
            str(root),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process=process)
        yield GitServer(root=root, url=f"git://127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


# --- http:// with Basic auth, git http-backend as CGI ---------------------------------------------
class _GitHttpHandler(BaseHTTPRequestHandler):
    server: _GitHttpServer
    protocol_version = "HTTP/1.0"  # one request per connection: the CGI output is sent as is, then close

    def do_GET(self) -> None:  # http.server's naming
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:  # signature of the base class
        self.server.requests.append(f"{self.command} {self.path} -> " + (format % args))

    def _authorized(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        ok = hmac.compare_digest(user, self.server.username) and hmac.compare_digest(password, self.server.password)
        return user if ok else None

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()  # the empty line after the last chunk
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        user = self._authorized()
        if user is None:
            self.server.rejected += 1
            body = b"authentication required\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="racetrackd tests"')
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = self._read_body()
        parts = urlsplit(self.path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user,
            "REMOTE_ADDR": self.client_address[0],
        }
        for header in ("Content-Encoding", "Git-Protocol"):
            if self.headers.get(header):
                env["HTTP_" + header.upper().replace("-", "_")] = self.headers[header]
        if "HTTP_GIT_PROTOCOL" in env:
            env["GIT_PROTOCOL"] = env["HTTP_GIT_PROTOCOL"]
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60, check=False
        )
        head, separator, payload = result.stdout.partition(b"\r\n\r\n")
        if not separator:
            head, separator, payload = result.stdout.partition(b"\n\n")
        if not separator:
            head, payload = b"", result.stdout
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name.strip(), value.strip()))
        if result.returncode != 0 and not head:
            status, payload, headers = 500, result.stderr, [("Content-Type", "text/plain")]
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _GitHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, root: Path, username: str, password: str) -> None:
        super().__init__(("127.0.0.1", port), _GitHttpHandler)
        self.root = root
        self.username = username
        self.password = password
        self.requests: list[str] = []
        self.rejected = 0


@pytest.fixture(scope="module")
def git_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A private repository host: http://127.0.0.1:<port>, Basic auth HTTP_USERNAME/HTTP_PASSWORD."""
    root = tmp_path_factory.mktemp("git-http-root")
    port = free_port()
    server = _GitHttpServer(port, root, HTTP_USERNAME, HTTP_PASSWORD)
    thread = threading.Thread(target=server.serve_forever, name="git-http", daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield GitServer(root=root, url=f"http://127.0.0.1:{port}", username=HTTP_USERNAME, password=HTTP_PASSWORD)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
