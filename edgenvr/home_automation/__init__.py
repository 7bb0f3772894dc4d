"""The box to home automation: events, camera states and Home Assistant discovery published to an MQTT broker
([mqtt] in the config), by a process of its own that only reads the index, so a broker that is down or slow
never touches recording."""
