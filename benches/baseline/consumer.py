"""The plain consumer the benchmark compares edc-ingest with.

It is the consumer a team writes first: aio-pika and asyncpg, prefetch 16, a pool of 16
connections, one transaction per message writing the record and its audit row, the ack after the
commit. On purpose it is not tuned, and it does none of edc-ingest's work: no validation against
the protocol, no de-identification, no events, no batch receipts, no dead letter with a reason.

    consumer.py --amqp-url URL --queue NAME --pg-url URL --count N

It consumes from an existing queue (declared by the benchmark as edc-ingest declares it) until it
has handled N messages, then prints one JSON line with its own timing and exits.
"""

import argparse
import asyncio
import hashlib
import json
import time
from datetime import datetime

import aio_pika
import asyncpg

PREFETCH = 16
POOL_SIZE = 16

INSERT_RECORD = """
INSERT INTO crf_records (record_id, version, message_id, study, site, subject, visit, form,
    items, pseudonyms, status, protocol_version, captured_at, entered_by, batch_id,
    payload_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, '{}', 'accepted', $10, $11, $12, $13, $14)
"""

INSERT_AUDIT = """
INSERT INTO audit_trail (record_id, version, action, actor, message_id, payload_sha256, detail)
VALUES ($1, $2, 'created', $3, $4, $5, 'status=accepted')
"""

# It reads no study protocol, so it has no protocol version to record.
PROTOCOL_VERSION = "none"


async def store(pool, message):
    """Parses the body and writes the record and its audit row in one transaction."""
    body = message.body
    record = json.loads(body)
    sha256 = hashlib.sha256(body).hexdigest()
    batch_id = (record.get("batch") or {}).get("id")
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(
                INSERT_RECORD,
                record["record_id"],
                record["version"],
                message.message_id,
                record["study"],
                record["site"],
                record["subject"],
                record["visit"],
                record["form"],
                json.dumps(record["items"]),
                PROTOCOL_VERSION,
                datetime.fromisoformat(record["captured_at"]),
                record["entered_by"],
                batch_id,
                sha256,
            )
            await conn.execute(
                INSERT_AUDIT,
                record["record_id"],
                record["version"],
                record["entered_by"],
                message.message_id,
                sha256,
            )


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--pg-url", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()

    pool = await asyncpg.create_pool(args.pg_url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    connection = await aio_pika.connect_robust(args.amqp_url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(args.queue)

    counts = {"stored": 0, "rejected": 0}
    first = None
    done = asyncio.Event()

    async def on_message(message):
        nonlocal first
        if first is None:
            first = time.monotonic()
        try:
            await store(pool, message)
        except (ValueError, KeyError, TypeError, AttributeError, asyncpg.PostgresError):
            # A body it cannot store (not JSON, a field missing or of the wrong type, a value the
            # table refuses): rejected without requeue, so the queue dead-letters it.
            await message.reject(requeue=False)
            counts["rejected"] += 1
        else:
            await message.ack()  # after the commit
            counts["stored"] += 1
        if counts["stored"] + counts["rejected"] >= args.count:
            done.set()

    await queue.consume(on_message)
    await done.wait()
    last = time.monotonic()
    print(
        json.dumps(
            {
                "handled": counts["stored"] + counts["rejected"],
                "stored": counts["stored"],
                "rejected": counts["rejected"],
                "seconds": last - first,
                "rate": args.count / (last - first),
                "cpu_seconds": time.process_time(),
            }
        ),
        flush=True,
    )
    await connection.close()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
