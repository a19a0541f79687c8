"""The seed article's compute node (compute.py), ported to Python 3 and
pika 1.x and nothing else: prefetch 1, reply with the correlation id.

Usage: seed_compute.py QUEUE [AMQP_URL]
"""
import sys

import pika

queue = sys.argv[1]
url = sys.argv[2] if len(sys.argv) > 2 else "amqp://guest:guest@127.0.0.1:5672/%2f"

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare(queue=queue)


def increase(n):
    return n + 1


def request(ch, method, props, body):
    response = increase(int(body))
    ch.basic_publish(
        exchange="",
        routing_key=props.reply_to,
        properties=pika.BasicProperties(correlation_id=props.correlation_id),
        body=str(response),
    )
    ch.basic_ack(delivery_tag=method.delivery_tag)


channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue=queue, on_message_callback=request)
print("ready", flush=True)
channel.start_consuming()
