"""The ticketing dev tools: the `ticketing` command, the local stack, the embedded servers and the gateway.

Never installed in an image; the services run on `ticketing_common` alone.
"""
