"""Other applications' APIs, served as thin shapes over the hub: Grace (seed 004) and JamBot
(seed 002). Their paths and JSON are those applications'; the behaviour is sessionhub's."""
