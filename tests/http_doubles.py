"""A base for the small HTTP servers the tests run as stand-ins (a SCEP CA, NDES, an
upstream that counts hits): one way to answer, and no request log in the test output."""

from http.server import BaseHTTPRequestHandler


class QuietHandler(BaseHTTPRequestHandler):
    """``reply`` sends a whole answer; requests are not logged."""

    def reply(self, body: bytes, content_type: str, status: int = 200, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass
