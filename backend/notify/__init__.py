"""Update messages out: after values are stored the backend tells GUIs which run changed
(versioned JSON, names only) over Kafka."""
