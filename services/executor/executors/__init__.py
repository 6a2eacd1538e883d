"""Job executors: shell, http, noop, nats, rabbitmq, grpc."""
