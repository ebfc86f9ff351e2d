"""Host FIFOs behave as the shim needs: no false EOF before the client connects, EOF after it leaves, writes
with back-pressure and no EPIPE when the reader has gone."""
import asyncio
import os

from rund.runtime.fifo import FifoReader, FifoWriter


def test_stdin_reader_sees_data_then_eof_not_a_false_eof_before_the_writer(tmp_path):
    path = str(tmp_path / "stdin")
    os.mkfifo(path)

    async def main():
        reader = FifoReader(path)
        got = asyncio.ensure_future(reader.read())
        await asyncio.sleep(0.1)
        assert not got.done()           # no writer yet: must not report EOF
        w = os.open(path, os.O_WRONLY)
        os.write(w, b"hello")
        assert await got == b"hello"
        os.close(w)
        assert await reader.read() == b""
        reader.close()

    asyncio.run(main())


def test_writer_delivers_everything_with_backpressure_and_survives_reader_exit(tmp_path):
    path = str(tmp_path / "stdout")
    os.mkfifo(path)
    client = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    payload = os.urandom(1 << 20)       # far more than the 64 KiB pipe buffer

    async def main():
        writer = FifoWriter(path)
        received = bytearray()
        loop = asyncio.get_running_loop()

        def drain():
            try:
                while chunk := os.read(client, 65536):
                    received.extend(chunk)
            except BlockingIOError:
                pass

        loop.add_reader(client, drain)
        await writer.write(payload)
        while len(received) < len(payload):
            await asyncio.sleep(0.01)
        loop.remove_reader(client)
        os.close(client)                # the client goes away: later writes must not raise EPIPE
        await writer.write(b"after the reader left")
        writer.close()
        return bytes(received)

    assert asyncio.run(main()) == payload
