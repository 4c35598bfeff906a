"""The training wing: where Lightning meets the networks (module, schedule, callbacks, fault tolerance,
precision choice, loggers). The library's inference side never imports it."""
