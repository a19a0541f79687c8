"""The seed article's control center (center.py with correlation ids),
ported to Python 3 and pika 1.x. Prints one result per input.

Usage: seed_center.py QUEUE N [N ...]    (AMQP_URL from the environment)
"""
import os
import sys
import uuid

import pika


class Center(object):
    def __init__(self, url, queue):
        self.queue = queue
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(
            queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True
        )
        self.response = {}

    def on_response(self, ch, method, props, body):
        self.response[props.correlation_id] = body

    def request(self, n):
        corr_id = str(uuid.uuid4())
        self.response[corr_id] = None
        self.channel.basic_publish(
            exchange="",
            routing_key=self.queue,
            properties=pika.BasicProperties(reply_to=self.callback_queue, correlation_id=corr_id),
            body=str(n),
        )
        while self.response[corr_id] is None:
            self.connection.process_data_events(time_limit=1)
        return int(self.response[corr_id])


url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
center = Center(url, sys.argv[1])
for n in sys.argv[2:]:
    print(center.request(int(n)), flush=True)
