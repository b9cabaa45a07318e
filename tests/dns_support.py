"""A small authoritative DNS server on loopback for the resolver's unit tests (dnspython's own message code): the
real lookup path (UDP, timeouts, TTLs, NXDOMAIN) without dnsmasq, and never a query outside the machine."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class LoopbackDns:
    """Answers A/AAAA for `records` (name -> [(address, ttl)]) on 127.0.0.1:<free port>; other names: NXDOMAIN.
    `silent` drops every query (a dead server); `queries` counts what arrived."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[str, int]]] = {}
        self.silent = False
        self.queries = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-dns", daemon=True)

    def __enter__(self) -> LoopbackDns:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def _serve(self) -> None:
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset

        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries += 1
            if self.silent:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            if name not in self.records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                family = 6 if question.rdtype == dns.rdatatype.AAAA else 4
                found = [(a, ttl) for a, ttl in self.records[name] if (":" in a) == (family == 6)]
                if found:
                    rdtype = "AAAA" if family == 6 else "A"
                    ttl = min(t for _, t in found)
                    response.answer.append(dns.rrset.from_text(question.name, ttl, "IN", rdtype,
                                                               *[a for a, _ in found]))
            response.flags |= dns.flags.AA
            self._sock.sendto(response.to_wire(), peer)
