"""A local TLS terminator for the benchmark: HTTPS on 127.0.0.1 in front of a plain-HTTP server.

The bench puts the fake Stripe behind it, so that the daemon's calls pay what calls to the real
Stripe pay (TCP and TLS handshakes, encryption) and the bench can count how often they do.
It makes its own certificate authority and a server certificate for `localhost` and 127.0.0.1
with the openssl command, in the directory it is given; the daemon is told to trust that CA
(STRIPE_CA_FILE), never the system's store.

    python3 bench/tls-terminator.py --target-port 12111 --dir /tmp/tls

prints `tls-terminator listening on https://localhost:PORT ca=/tmp/tls/ca.pem` once it accepts,
and stops when its standard input closes (the parent closed the pipe, or died).
"""

import argparse
import os
import select
import socket
import ssl
import subprocess
import sys
import threading


def make_certificates(directory):
    """A CA, and a server certificate for localhost signed by it; returns (ca, cert, key) paths."""
    ca_key, ca_cert = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.pem")
    key, csr, cert = (os.path.join(directory, name) for name in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(directory, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_cert,
                    "-days", "2", "-subj", "/CN=paymentsd bench CA"], **quiet)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", "/CN=localhost"], **quiet)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
                    "-out", cert, "-days", "2", "-extfile", ext], **quiet)
    return ca_cert, cert, key


def pump(client, upstream):
    """Copies bytes both ways until either side closes."""
    sockets = [client, upstream]
    try:
        while True:
            # A TLS socket may hold decrypted bytes that select cannot see.
            readable = [client] if client.pending() else select.select(sockets, [], [])[0]
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                (upstream if source is client else client).sendall(data)
    except (OSError, ssl.SSLError):
        return
    finally:
        for s in sockets:
            try:
                s.close()
            except OSError:
                pass


def serve(listener, context, target_port):
    while True:
        try:
            raw, _ = listener.accept()
        except OSError:
            return

        def handle(raw=raw):
            try:
                client = context.wrap_socket(raw, server_side=True)
                upstream = socket.create_connection(("127.0.0.1", target_port))
            except (OSError, ssl.SSLError):
                raw.close()
                return
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pump(client, upstream)

        threading.Thread(target=handle, daemon=True).start()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--dir", required=True, help="where the CA and the server certificate are written")
    args = parser.parse_args(argv)

    ca, cert, key = make_certificates(args.dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    threading.Thread(target=serve, args=(listener, context, args.target_port), daemon=True).start()
    print(f"tls-terminator listening on https://localhost:{listener.getsockname()[1]} ca={ca}", flush=True)
    sys.stdin.read()  # until the parent closes the pipe


if __name__ == "__main__":
    main()
