"""Flower finds the apps by name in this module (plain assignments, as it requires)."""

from learnloop.learning.federated import apps

server_app = apps.server_app
client_app = apps.client_app
