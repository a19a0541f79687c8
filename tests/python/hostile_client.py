"""Publishes requests no well-behaved client sends, the way a careless or
hostile one can: pika passes `bytes` through as they are, so short strings
(properties and header names) need not be UTF-8, and headers may nest as
deep as a frame allows.

    hostile_client.py QUEUE REPLY_QUEUE CASE...   one request per case
    hostile_client.py QUEUE REPLY_QUEUE fuzz N SEED
        N requests with random properties, headers and bodies

Every request names REPLY_QUEUE in `reply_to` unless the case is about
`reply_to`. Prints the number of requests published.
"""

import os
import random
import sys

import pika

NOT_UTF8 = b"\xff\xfe\xc3"


def nested(depth):
    table = {"leaf": 1}
    for _ in range(depth):
        table = {"t": table}
    return table


def cases(reply_queue):
    """Each case: (properties, body)."""
    ok = dict(reply_to=reply_queue, correlation_id="hostile")
    for name in (
        "content_type",
        "content_encoding",
        "message_id",
        "type",
        "app_id",
        "cluster_id",
    ):
        yield f"{name}-not-utf8", dict(ok, **{name: NOT_UTF8}), b"1"
    yield "correlation_id-not-utf8", dict(ok, correlation_id=NOT_UTF8), b"1"
    yield "reply_to-not-utf8", dict(ok, reply_to=NOT_UTF8), b"1"
    yield "header-name-not-utf8", dict(ok, headers={NOT_UTF8: 1}), b"1"
    yield "nested-header-name-not-utf8", dict(
        ok, headers={"a": {"b": {NOT_UTF8: "x"}}}
    ), b"1"
    yield "array-header-name-not-utf8", dict(
        ok, headers={"a": [1, {NOT_UTF8: "x"}]}
    ), b"1"
    yield "headers-nested-deep", dict(ok, headers=nested(18000)), b"1"
    yield "header-value-bytes", dict(ok, headers={"x": NOT_UTF8 * 1000}), b"1"


def random_value(rng, depth):
    kind = rng.randrange(8 if depth < 6 else 5)
    if kind == 0:
        return rng.randrange(-(2**63), 2**63)
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    if kind == 2:
        return rng.random() < 0.5
    if kind == 3:
        return None
    if kind == 4:
        return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(20)))
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return random_table(rng, depth + 1)


def random_short(rng):
    if rng.random() < 0.5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30)))
    return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(1, 30)))


def random_table(rng, depth=0):
    return {random_short(rng): random_value(rng, depth) for _ in range(rng.randrange(4))}


def random_request(rng, reply_queue):
    properties = {}
    for name in (
        "content_type",
        "content_encoding",
        "correlation_id",
        "message_id",
        "type",
        "app_id",
        "cluster_id",
    ):
        if rng.random() < 0.3:
            properties[name] = random_short(rng)
    properties["reply_to"] = random_short(rng) if rng.random() < 0.2 else reply_queue
    if rng.random() < 0.1:
        del properties["reply_to"]
    if rng.random() < 0.5:
        properties["headers"] = random_table(rng)
    if rng.random() < 0.05:
        properties["headers"] = nested(rng.randrange(50, 5000))
    if rng.random() < 0.2:
        properties["priority"] = rng.randrange(256)
    if rng.random() < 0.2:
        properties["delivery_mode"] = rng.choice([1, 2])
    if rng.random() < 0.2:
        properties["timestamp"] = rng.randrange(2**32)
    body_kind = rng.randrange(4)
    if body_kind == 0:
        body = str(rng.randrange(-(2**40), 2**40)).encode()
    elif body_kind == 1:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(100)))
    elif body_kind == 2:
        body = b""
    else:
        body = str(rng.randrange(-(2**70), 2**70)).encode()
    return properties, body


def main():
    sys.setrecursionlimit(100_000)
    queue, reply_queue, *what = sys.argv[1:]
    connection = pika.BlockingConnection(pika.URLParameters(os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")))
    channel = connection.channel()
    if what[0] == "fuzz":
        count, seed = int(what[1]), int(what[2])
        rng = random.Random(seed)
        requests = (random_request(rng, reply_queue) for _ in range(count))
    else:
        known = {name: (props, body) for name, props, body in cases(reply_queue)}
        if what == ["all"]:
            what = list(known)
        requests = (known[name] for name in what)
    published = 0
    for properties, body in requests:
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            properties=pika.BasicProperties(**properties),
            body=body,
        )
        published += 1
    connection.close()
    print(published)


if __name__ == "__main__":
    main()
