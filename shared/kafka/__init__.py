"""Touchline's Kafka code, one job per module (import from the module, not from here):

- :mod:`shared.kafka.clients`: producer and consumer factories, the topics and their creation;
- :mod:`shared.kafka.batch_worker`: :class:`~shared.kafka.batch_worker.BatchWorker`, the
  consume loop every consumer-group worker shares;
- :mod:`shared.kafka.dlq`: the headers a dead-lettered record carries, written and read;
- :mod:`shared.kafka.lag`: :class:`~shared.kafka.lag.LagProbe`, a group's lag from outside it;
- :mod:`shared.kafka.compat`: a fix to kafka-python 3.0.12's group join, applied by whoever
  starts a process (``touchline``'s ``main()``, the test session), never on import.
"""
