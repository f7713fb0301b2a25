"""The transforms the evaluation can measure invariance to (:mod:`sslray.eval.invariance`), and how
many variants each has (0 = the reference): rotation 0/90/180/270 deg; jigsaw in place or shuffled;
colour none or jittered; crop none or a random resized crop; identity two identical variants."""

VARIANTS = {"identity": 2, "rotation": 4, "jigsaw": 2, "color": 2, "crop": 2}
TRANSFORMS = tuple(VARIANTS)
