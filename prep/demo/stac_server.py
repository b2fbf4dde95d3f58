"""A STAC API and COG file server on 127.0.0.1, for the tests and `benchmarks.stac`.

`StacServer(scene_dir)` serves the local route's scene folders (`prep.demo`'s
`raw/scenes/<item>/<item>.json` + COGs) as a catalogue:

  GET  /                  landing page (STAC API core + item-search conformance)
  POST /search            item pages of `page_size`, filtered by the collection,
                          the bbox of `intersects` and the `datetime` interval;
                          a `next` link (POST, body with `token`) to the next page
  GET/HEAD /files/<item>/<file>   the files, with single-range requests (206)

Asset hrefs are rewritten to absolute http://127.0.0.1:<port>/files/… URLs.
Faults are injected per file. `fail(name, status, tries)` answers `status` to
every request of the file during its first `tries` read tries (a try ends with
the reader's one-byte status probe, `Range: bytes=0-0`, which only
`prep.stac.http_status` sends; GDAL's own requests per try vary with its
version); `fault(name, "truncate")` sends half the bytes of the next GET with
the full Content-Length; `fault(name, "garbage")` replaces the file by junk;
`require_sig(name, sig)` answers 403 unless the query has `sig=<sig>`. The
server counts requests per path and the bytes sent per file.
"""
from __future__ import annotations

import collections
import datetime
import http.server
import json
import pathlib
import threading
import urllib.parse

COLLECTION = "sentinel-2-l2a"


class StacServer:
  """The loopback catalogue; use as a context manager (`url`, `bytes_sent`…)."""

  def __init__(self, scene_dir, *, page_size: int = 7, edit_item=None):
    self.root = pathlib.Path(scene_dir)
    self.page_size = page_size
    self.edit_item = edit_item or (lambda item: item)
    self.faults = collections.defaultdict(list)
    self.failing = {}                       # name -> [status, tries left]
    self.garbage = set()
    self.sigs = {}
    self.requests = collections.Counter()
    self.bytes_sent = collections.Counter()
    self.search_bodies = []
    self.lock = threading.Lock()
    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
    self.httpd.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

  def __enter__(self):
    self.thread.start()
    return self

  def __exit__(self, *exc):
    self.httpd.shutdown()
    self.httpd.server_close()

  def fault(self, name: str, *actions: str) -> None:
    """Next GETs of /files/<name> answer `actions` in turn, then normally."""
    self.faults[name].extend(actions)

  def fail(self, name: str, status: int, tries: int = 10**6) -> None:
    """Requests of /files/<name> answer `status` during the next `tries` tries."""
    self.failing[name] = [status, tries]

  def require_sig(self, name: str, sig: str) -> None:
    self.sigs[name] = sig

  def items(self) -> list[dict]:
    """Every item, hrefs made absolute, sorted by date and id."""
    out = []
    for path in sorted(self.root.glob("*/*.json")):
      item = json.loads(path.read_text(encoding="utf-8"))
      for asset in item.get("assets", {}).values():
        asset["href"] = f"{self.url}/files/{path.parent.name}/{asset['href']}"
      out.append(self.edit_item(item))
    return sorted(out, key=lambda i: (i["properties"]["datetime"], i["id"]))

  def search(self, body: dict) -> dict:
    """One page of the items matching `body` (collections, intersects, datetime)."""
    with self.lock:
      self.search_bodies.append(body)
    match = [i for i in self.items() if _matches(i, body)]
    start = int(body.get("token") or 0)
    size = min(int(body.get("limit") or self.page_size), self.page_size)
    page = {"type": "FeatureCollection", "features": match[start:start + size],
            "links": []}
    if start + size < len(match):
      page["links"].append({"rel": "next", "href": f"{self.url}/search", "method": "POST",
                            "body": dict(body, token=str(start + size))})
    return page


def _matches(item: dict, body: dict) -> bool:
  if body.get("collections") and COLLECTION not in body["collections"]:
    return False
  if "intersects" in body:
    coords = [p for ring in body["intersects"]["coordinates"] for p in ring]
    xs, ys = [p[0] for p in coords], [p[1] for p in coords]
    b = item["bbox"]
    if not (min(xs) < b[2] and max(xs) > b[0] and min(ys) < b[3] and max(ys) > b[1]):
      return False
  if body.get("datetime"):
    lo, hi = body["datetime"].split("/")
    when = datetime.datetime.fromisoformat(item["properties"]["datetime"])
    if lo not in ("", "..") and when < datetime.datetime.fromisoformat(lo):
      return False
    if hi not in ("", "..") and when > datetime.datetime.fromisoformat(hi):
      return False
  return True


def _landing(url: str) -> dict:
  return {"type": "Catalog", "id": "loopback", "stac_version": "1.0.0",
          "description": "test catalogue",
          "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                         "https://api.stacspec.org/v1.0.0/item-search"],
          "links": [{"rel": "self", "href": f"{url}/", "type": "application/json"},
                    {"rel": "root", "href": f"{url}/", "type": "application/json"},
                    {"rel": "search", "href": f"{url}/search", "method": "POST",
                     "type": "application/geo+json"},
                    {"rel": "search", "href": f"{url}/search", "method": "GET",
                     "type": "application/geo+json"}]}


def _handler(server: StacServer):
  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for
    # the client's delayed ACK of the headers (40 ms on Linux) on every kept-alive request.
    disable_nagle_algorithm = True

    def log_message(self, *args):
      pass

    def _json(self, obj, status=200):
      data = json.dumps(obj).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def _status(self, status):
      self.send_response(status)
      self.send_header("Content-Length", "0")
      self.end_headers()

    def do_GET(self):
      self._serve(head=False)

    def do_HEAD(self):
      self._serve(head=True)

    def do_POST(self):
      length = int(self.headers.get("Content-Length") or 0)
      body = json.loads(self.rfile.read(length) or b"{}")
      with server.lock:
        server.requests["/search"] += 1
      if urllib.parse.urlparse(self.path).path.rstrip("/") == "/search":
        self._json(server.search(body))
      else:
        self._status(404)

    def _serve(self, head: bool):
      url = urllib.parse.urlparse(self.path)
      path = url.path
      with server.lock:
        server.requests[path] += 1
      if path in ("", "/"):
        return self._json(_landing(server.url))
      if path == "/search":
        q = urllib.parse.parse_qs(url.query)
        return self._json(server.search({k: v[0] for k, v in q.items()}))
      if not path.startswith("/files/"):
        return self._status(404)
      name = path[len("/files/"):]
      file = server.root / name
      if name in server.sigs and urllib.parse.parse_qs(url.query).get("sig") != [
          server.sigs[name]]:
        return self._status(403)
      with server.lock:
        failing = server.failing.get(name)
        if failing and failing[1] > 0:
          if self.headers.get("Range") == "bytes=0-0":   # the reader's probe ends a try
            failing[1] -= 1
          return self._status(failing[0])
        action = server.faults[name].pop(0) if server.faults[name] and not head else None
      if not file.is_file():
        return self._status(404)
      data = file.read_bytes()
      if action == "garbage" or name in server.garbage:
        server.garbage.add(name)
        data = bytes(range(256)) * (len(data) // 256 + 1)
        data = data[:len(file.read_bytes())]
      start, end = 0, len(data) - 1
      rng = self.headers.get("Range")
      if rng and rng.startswith("bytes="):
        a, _, b = rng[len("bytes="):].split(",")[0].partition("-")
        start, end = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
      else:
        self.send_response(200)
      chunk = data[start:end + 1]
      self.send_header("Accept-Ranges", "bytes")
      self.send_header("Content-Type", "image/tiff")
      self.send_header("Content-Length", str(len(chunk)))
      self.end_headers()
      if head:
        return
      if action == "truncate":
        chunk = chunk[:len(chunk) // 2]
        self.close_connection = True
      self.wfile.write(chunk)
      with server.lock:
        server.bytes_sent[name] += len(chunk)

  return Handler
