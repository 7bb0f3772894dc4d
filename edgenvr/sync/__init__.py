"""The box side of store-and-forward to the city hub: the box's client of the hub's API (enrolment, tus uploads
signed with the device key), and (next) the durable outbox and the uploader process that drains it whenever
the link is up. Nothing here may slow recording: it runs in a process of its own and reads the index."""
