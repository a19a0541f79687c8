"""The seed article's compute node (compute.py), ported to Python 3 and
pika 1.x and nothing else: prefetch 1, reply with the correlation id.
With --durable, the one line RabbitMQ 4.3 and later need: the queue is
declared durable=True, as our node declares it.

Usage: seed_compute.py QUEUE [AMQP_URL] [--durable]
"""
import sys

import pika

durable = "--durable" in sys.argv
args = [arg for arg in sys.argv[1:] if arg != "--durable"]
queue = args[0]
url = args[1] if len(args) > 1 else "amqp://guest:guest@127.0.0.1:5672/%2f"

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare(queue=queue, durable=durable)


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
