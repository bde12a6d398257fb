"""Images that drive chosen neurons, and the model as a data engine (predicted responses for any images).

    from daenr_fast.synthesis import open_run, synthesize, write_report, predict_images
    run = open_run("runs/cae-fr2")                       # a folder written by daenr train
    result = synthesize(run, [3, 17], objective="max")   # decoder and pixel images, natural baseline, true rates
    write_report(result, "synthesis-out")                # synthesis.npz / .json / .png
    rates = predict_images(run, images)                  # predicted (and true, on simulated data) rates

* :mod:`.decoder_method`: optimise the decoder's input under a Gaussian latent prior (:mod:`.latent`);
* :mod:`.pixel_method`: the pixel-space baseline (smoothed gradient, contrast bound), for any model with a readout;
* :mod:`.objective`: ``max`` or ``target:RATE``; :mod:`.ascent`: the shared loop; :mod:`.report`: the outputs;
* :mod:`.predict`: ``daenr predict``; :mod:`.experiment`: the decoder-vs-pixel-vs-natural experiment.
"""
from daenr_fast.synthesis.objective import Objective, parse_objective
from daenr_fast.synthesis.predict import predict_images, read_images
from daenr_fast.synthesis.report import write_report
from daenr_fast.synthesis.run import SynthesisRun, open_run, parse_neurons
from daenr_fast.synthesis.synthesize import METHODS, SynthesisResult, synthesize

__all__ = ["METHODS", "Objective", "SynthesisResult", "SynthesisRun", "open_run", "parse_neurons",
           "parse_objective", "predict_images", "read_images", "synthesize", "write_report"]
