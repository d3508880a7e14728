"""Issue 23, item 2: the page's credentials stay with its user, as real Unix users.

alice serves ``rxjobs ui`` over her share dir; bob, another local user, wants
her token or her cookie:

- he reads every process's command line (``/proc/PID/cmdline``) while her
  browser is being opened;
- he serves a page of his own on another localhost port and gets her
  browser to visit it (real Chromium, driven by Playwright);
- he connects to her Unix socket (``rxjobs ui --unix-socket``).
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, sync_api

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

URL_RE = re.compile(r"(http://127\.0\.0\.1:(\d+)(/[A-Za-z0-9_-]+))/\?token=(\S+)")
# What bob's page server does: answer every GET, and note the Cookie header it was sent.
COOKIE_LOGGER = """
import http.server, sys
log = sys.argv[1]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as out:
            out.write(f"{self.path}\\t{self.headers.get('Cookie', '')}\\n")
        body = b"<html><body>bob's page</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def wait_for(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def u(module_unix_users):
    return module_unix_users


@pytest.fixture(scope="module")
def alices_page(u):
    """``rxjobs ui`` as alice, whose "browser" (``$BROWSER``) notes its arguments and lingers;
    yields (base URL with the prefix, port, token, where the browser's arguments were noted)."""
    share = u.homes / u.alice.name / "ui-share"
    u.make_jobs(u.alice, share, ["retrieved", "unretrieved"])
    browser = u.base / "fake-browser"
    noted = u.homes / u.alice.name / "browser-args"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {noted}\nexec sleep 120\n')
    os.chmod(browser, 0o755)
    proc = subprocess.Popen(
        u.command(u.alice, [u.interpreter, "-m", "rxjobs", "--share-dir", str(share), "ui", "--port", "0"],
                  {"BROWSER": str(browser)}),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
        cwd=u.alice.home, start_new_session=True)
    try:
        found = None
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = URL_RE.search(line)
        assert found is not None, "alice's server printed no URL"
        yield found.group(1), int(found.group(2)), found.group(4), noted
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def bobs_page(u):
    """bob's own page server on another localhost port; yields (port, its log of cookies)."""
    log = u.homes / u.bob.name / "cookies.log"
    proc = u.spawn(u.bob, COOKIE_LOGGER, log)
    line = proc.stdout.readline()
    assert line.strip().isdigit(), proc.stderr.read() if proc.poll() is not None else line
    yield int(line), log
    os.killpg(proc.pid, 9)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile: alice's browser."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("no /usr/bin/chromium")
    manager = sync_api.sync_playwright().start()
    try:
        context = manager.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("alice-chromium")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True)
        try:
            context.set_default_timeout(15000)
            yield context
        finally:
            context.close()
    finally:
        manager.stop()


def test_the_token_is_on_no_command_line(u, alices_page):
    base, _, token, noted = alices_page
    args = wait_for(lambda: noted.exists() and noted.read_text().split(), "alice's browser to start")
    # What her browser was given is a private file, not the URL.
    (opened,) = args
    assert token not in opened and opened.startswith("file://")
    path = Path(opened[len("file://"):])
    st = os.stat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (u.alice.uid, 0o600)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert f"{base}/?token={token}" in path.read_text()  # it does lead to the page
    # bob reads every command line on the machine (and cannot read the file).
    seen = u.python(u.bob, """
        import os, sys
        token, path = sys.stdin.read().split()
        hits = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        hits.append(pid)
            except OSError:
                pass
        try:
            open(path).read()
            readable = True
        except PermissionError:
            readable = False
        print(len(hits), readable)
    """, input=f"{token} {path}\n").ok()
    assert seen.stdout.split() == ["0", "False"], seen.stdout


def test_a_cookie_is_never_sent_to_another_users_port(u, alices_page, bobs_page, browser):
    base, port, token, _ = alices_page
    bobs_port, log = bobs_page
    prefix = base.rsplit("/", 1)[1]
    tab = browser.new_page()
    try:
        tab.goto(f"{base}/jobs?token={token}")
        assert tab.url == f"{base}/jobs"  # the token went into a cookie
        cookies = [c for c in browser.cookies() if c["name"].startswith("rxjobs-ui")]
        assert cookies and all(c["path"] == f"/{prefix}/" for c in cookies), cookies
        assert tab.goto(f"{base}/jobs").status == 200  # the cookie lets her in
        # She visits bob's page, at its root and at the paths her own page uses.
        for path in ("/", "/jobs", "/api/jobs", "/cleanup"):
            assert tab.goto(f"http://127.0.0.1:{bobs_port}{path}").status == 200
        # Nor does her own server answer outside its prefix, cookie or not.
        assert tab.goto(f"http://127.0.0.1:{port}/jobs").status == 404
    finally:
        tab.close()
    lines = wait_for(lambda: log.exists() and log.read_text().splitlines(), "bob's server's log")
    assert len(lines) >= 4, lines
    assert not [line for line in lines if "rxjobs-ui" in line], lines


def test_a_unix_socket_only_its_owner_can_connect_to(u):
    share = u.homes / u.alice.name / "sock-share"
    u.make_jobs(u.alice, share, ["retrieved"])
    path = u.homes / u.alice.name / "ui.sock"
    proc = subprocess.Popen(
        u.command(u.alice, [u.interpreter, "-m", "rxjobs", "--share-dir", str(share), "ui", "--unix-socket",
                            str(path)]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
        cwd=u.alice.home, start_new_session=True)
    try:
        said = []
        while not any("localhost:PORT" in line for line in said):
            line = proc.stdout.readline()
            assert line, "".join(said)
            said.append(line)
        found = re.search(r"http://localhost:PORT(/[A-Za-z0-9_-]+)/\?token=(\S+)", "".join(said))
        assert found is not None and "ssh -N -L PORT:" in "".join(said)
        prefix, token = found.groups()
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and (st.st_uid, stat.S_IMODE(st.st_mode)) == (u.alice.uid, 0o600)
        refused = u.python(u.bob, """
            import socket, sys
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(sys.argv[1])
                print("connected")
            except PermissionError:
                print("refused")
        """, path)
        assert refused.stdout.strip() == "refused", refused.stdout + refused.stderr

        def get(target: str) -> str:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                s.connect(str(path))
                s.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost:8888\r\nConnection: close\r\n\r\n"
                          .encode())
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks).decode("latin-1")

        let_in = get(f"{prefix}/jobs?token={token}")
        assert let_in.startswith("HTTP/1.1 303"), let_in[:300]
        head = let_in.split("\r\n\r\n", 1)[0]
        assert f"\r\nlocation: {prefix}/jobs\r\n" in head and f"Path={prefix}/" in head, head
        assert get(f"/jobs?token={token}").startswith("HTTP/1.1 404")
    finally:
        os.killpg(proc.pid, 2)  # Ctrl-C: it stops and removes its socket
        proc.wait(timeout=30)
    assert not path.exists()
