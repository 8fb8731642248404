"""The method of Sec. 3, one idea per module: segment pooling (Sec. 3.1), the models f_g and
f_c and their losses (Sec. 3.2, Eq. 2, 3, 6, 7, 11), MC-Dropout uncertainty (Eq. 8-10), reliable
clip mining with temporal context (Sec. 3.3) and the evaluation protocol (Sec. 4.1).

Nothing here imports from the experiments, the book or the command line.
"""
