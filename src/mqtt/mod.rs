//! MQTT adapter: topics, Home Assistant discovery, state/availability/alert publishing, command
//! parsing and the bridge request/response API. Talks only to the broker.
