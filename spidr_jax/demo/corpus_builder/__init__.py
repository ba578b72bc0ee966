"""The generator of the bundled demo corpus: short English sentences spoken by espeak-ng, with phone alignments.

    python -m spidr_jax.demo.build_corpus                  # rewrites spidr_jax/demo/corpus/
    python -m spidr_jax.demo.build_corpus --output /tmp/c --num-utterances 24

Sentences come from a small seeded template grammar, so the same seed gives the same corpus. Each is spoken by
one of a few synthetic speakers (an espeak-ng voice and variant at a fixed base pitch and pitch range) at its own
rate. The phone alignments are not estimated: they are the synthesizer's own phoneme events
(`espeakEVENT_PHONEME`: a phoneme's name and the sample where its sound starts), collected through the
libespeak-ng C API while the audio is generated, mapped onto the ARPAbet-style inventory `phones.PHONES` and
carried through the resampling from espeak's 22,050 Hz to 16 kHz. `checks.check_timing` compares them with the
signal on every build.

The steps, one module each, in the order a build runs them:

- `plan`: the audio format, the speakers, `BuildOptions` and the list of utterances to speak;
- `sentences`: the template grammar that gives the sentences;
- `espeak`: libespeak-ng through ctypes, synthesis that records the phoneme events;
- `phones`: the inventory, espeak-ng phonemes to phones, labelled segments and 10 ms frame labels;
- `synthesis`: one utterance after another, synthesized, resampled to 16 kHz and labelled;
- `checks`: the timing check, labels against the signal;
- `writers`: audio, manifests, alignments, ABX items, speakers and phone list;
- `readme`: README.md, the formats and this build's statistics;
- `cli`: the command line, which runs them in order.

Generation needs libespeak-ng: the system library (Debian/Ubuntu `libespeak-ng1`, found by
`ctypes.util.find_library`), the `espeakng-loader` wheel, or `--library PATH`. Training and evaluation read only
the committed files and need none of this. `corpus/README.md`, written by the generator, documents the formats.
"""
