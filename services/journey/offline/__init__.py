"""journey's offline tools, used by the `klantreis` command, benchmarks and tests, never by the live service: the
simulated network (`simulator`), histories loaded into and read back from Kafka (`history`), the engine over a
history in memory (`memory`) and back-testing a catalogue with it (`backtest`). They may import the live modules
(engine, partition, rules); no live module imports them."""
