"""One web replica: the ASGI app (API, dashboard, admin, the playground's WebSocket) under uvicorn.

Run by path from the repository root, as platform/Procfile's `web` line does:

    .venv/bin/python platform/web.py --host 0.0.0.0 --port 8000 [--shared-port 8080]

It serves on --port, this replica's own port (Prometheus scrapes each replica's /metrics there: the counters
are per process), and with --shared-port (or WEB_SHARED_PORT) on that port too, which every replica of the
host binds with SO_REUSEPORT, so the kernel spreads new connections over them: several replicas behind one
port without a load balancer (`make up`). uvicorn's own command line binds one socket and never with
SO_REUSEPORT, hence this script; it is otherwise `uvicorn config.asgi:application --ws-max-size
$PLAYGROUND_WS_MAX_BYTES --no-access-log --lifespan off`.

This folder is not a package (a `platform` package would shadow the standard library's): this file is only
ever run by path.
"""
import argparse
import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def listen(host: str, port: int, *, shared: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        sys.exit(f"web: cannot listen on {host}:{port}: {exc.strerror}")
    sock.listen(2048)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000),
                        help="this replica's own port (default: $PORT, else 8000)")
    parser.add_argument("--shared-port", type=int, default=int(os.environ.get("WEB_SHARED_PORT") or 0),
                        help="a port shared with the host's other replicas (default: $WEB_SHARED_PORT; none)")
    parser.add_argument("--ws-max-size", type=int,
                        default=int(os.environ.get("PLAYGROUND_WS_MAX_BYTES") or 2 << 20),
                        help="largest WebSocket message read (default: $PLAYGROUND_WS_MAX_BYTES, else 2 MiB)")
    args = parser.parse_args()

    # Run by path, Python put platform/ first on sys.path: the project's root goes there instead, as for
    # manage.py (the standard library's `platform` module still wins over this folder, which has no __init__).
    sys.path[0] = str(ROOT)
    os.chdir(ROOT)
    import uvicorn

    sockets = [listen(args.host, args.port, shared=False)]
    if args.shared_port:
        sockets.append(listen(args.host, args.shared_port, shared=True))
    config = uvicorn.Config("config.asgi:application", ws_max_size=args.ws_max_size, access_log=False,
                            lifespan="off")
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
