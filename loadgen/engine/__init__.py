"""One load-generator worker: an event loop driving its share of the connections.

Closed loop (no ``--rate``): each connection keeps ``depth`` messages in
flight and sends the next one the moment an echo is complete; latency is
send to full echo.

Open loop (``--rate``): message k of a connection is *intended* at
``start + phase + k * interval``. At most ``depth`` messages are in flight;
a message that could not be sent on time because the connection was still
waiting for the server is timed from its intended time (coordinated
omission corrected, as wrk2 does); the uncorrected figure (from the actual
send) is recorded beside it. A send that is late only because the client's
timer fired late is timed from the actual send: the server did not cause it.

Hot path: ``data_received`` compares the echo with the bytes sent (one
memcmp), appends one int to an array, builds and writes the next message.
Histogram work happens once a second, in a batch.

Transports: TCP and Unix stream sockets share ``Conn``; over UDP a
"connection" is one connected datagram socket (``UdpConn``) whose datagrams
carry connection and sequence. UDP promises nothing, so loss, duplication
and reordering are counted separately, and a datagram not echoed within
``--timeout`` is declared lost (never waited for forever).

Layout (imports run one way: worker -> stream/datagram -> traffic; native -> worker):

* ``traffic.py``: the clock, the open-loop schedule, what every connection shares;
* ``stream.py``: TCP and Unix-socket connections of the Python engine;
* ``datagram.py``: UDP;
* ``worker.py``: one process's loop, timers and reports;
* ``native.py`` with ``_native.c``: the compiled engine for stream transports and its Python face.
"""

from . import native  # noqa: F401,E402
from .datagram import UDP_COUNTS, UdpConn  # noqa: F401
from .stream import Closed1Conn, Conn  # noqa: F401
from .traffic import drain_seconds, new_loop  # noqa: F401
from .worker import ConnectError, Worker, worker_main  # noqa: F401
