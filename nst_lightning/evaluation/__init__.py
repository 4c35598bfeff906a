"""Quality measures of stylized images and the evaluation of a trained network against L-BFGS."""
