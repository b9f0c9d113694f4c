"""Celery workers: consume domain events from RabbitMQ and publish them through the Publisher."""
