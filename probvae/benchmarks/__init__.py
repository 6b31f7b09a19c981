"""Speed and memory: `bench` (the contenders and the table), `measure`
(timing rounds, FLOP counts, peak memory), `memory` (each peak in its own
process) and `baseline` (the plain tf-keras recipe probvae is compared with)."""
