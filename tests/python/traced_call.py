"""One call from pika with W3C Trace Context headers set by hand, as the
OpenTelemetry pika instrumentation sets them. Prints the reply's body,
then its traceparent and tracestate headers, one per line.

Usage: traced_call.py QUEUE TRACEPARENT TRACESTATE N    (AMQP_URL from the environment)
"""
import os
import sys
import uuid

import pika

queue, traceparent, tracestate, n = sys.argv[1:5]
connection = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
channel = connection.channel()
reply_queue = channel.queue_declare(queue="", exclusive=True).method.queue
replies = []
channel.basic_consume(
    queue=reply_queue,
    on_message_callback=lambda ch, method, props, body: replies.append((props, body)),
    auto_ack=True,
)
channel.basic_publish(
    exchange="",
    routing_key=queue,
    properties=pika.BasicProperties(
        reply_to=reply_queue,
        correlation_id=str(uuid.uuid4()),
        headers={"traceparent": traceparent, "tracestate": tracestate},
    ),
    body=n,
)
while not replies:
    connection.process_data_events(time_limit=1)
props, body = replies[0]
headers = props.headers or {}
text = lambda value: value.decode() if isinstance(value, bytes) else value
print(body.decode())
print(text(headers.get("traceparent", "")))
print(text(headers.get("tracestate", "")))
connection.close()
