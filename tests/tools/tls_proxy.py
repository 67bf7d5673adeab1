#!/usr/bin/env python3
"""A TLS-terminating TCP proxy for the Kafka-over-TLS test.

tansu 0.6 cannot serve TLS itself (its --cert and --key options refuse to
be combined), so the test puts this in front of it: clients speak TLS to
LISTEN_PORT with the certificate given, and every connection is piped in
clear to 127.0.0.1:TARGET_PORT. The broker advertises LISTEN_PORT, so the
clients' later connections come back through here too.

    tls_proxy.py LISTEN_PORT TARGET_PORT CERT_PEM KEY_PEM
"""

import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer, target_port):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))


async def main():
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    server = await asyncio.start_server(
        lambda reader, writer: handle(reader, writer, target_port),
        "127.0.0.1",
        listen_port,
        ssl=context,
    )
    async with server:
        await server.serve_forever()


asyncio.run(main())
