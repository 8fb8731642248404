"""`cupl import`: import real I3D / VGGish features into a feature bank."""

from __future__ import annotations

from cupl.data.annotations import AnnotationError
from cupl.data.importers import FeatureImportError, import_tad, import_ucf, import_xd


def configure_parser(parser):
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    ucf = sub.add_parser("ucf", help="UCF-Crime, RTFM 10-crop I3D (<video>_i3d.npy [T, 10, 2048])")
    ucf.add_argument("--train-list", required=True, help="list of training feature files")
    ucf.add_argument("--test-list", required=True, help="list of test feature files")
    ucf.add_argument("--annotations", required=True, help="Temporal_Anomaly_Annotation.txt (6 or 7 columns)")
    xd = sub.add_parser("xd", help="XD-Violence, 5-crop I3D (<video>__<crop>.npy) + VGGish audio")
    xd.add_argument("--train-list", required=True, help="rgb.list: one line per crop")
    xd.add_argument("--test-list", required=True, help="rgb_test.list: one line per crop")
    xd.add_argument("--annotations", required=True, help="annotations.txt")
    xd.add_argument("--audio-train-list", help="audio.list (<video>__vggish.npy)")
    xd.add_argument("--audio-test-list", help="audio_test.list")
    tad = sub.add_parser("tad", help="TAD, UMIL label files + RTFM-layout features")
    tad.add_argument("--train-labels", required=True, help="TAD_train.txt: path 0 num_frames class")
    tad.add_argument("--test-labels", required=True, help="TAD_test.txt: path num_frames class start end")
    tad.add_argument("--pattern", default="{name}_i3d.npy", help="feature file name (default: %(default)s)")
    for p, root_help in ((ucf, "folder of the .npy files (when the lists hold other paths)"),
                         (xd, "folder of the .npy files (when the lists hold other paths)"),
                         (tad, "folder of the feature files")):
        p.add_argument("--feature-root", required=p is tad, help=root_help)
        p.add_argument("--out", required=True, help="bank to write (.h5)")
        p.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                       help="storage dtype of the bank (default: %(default)s)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument("--overwrite", action="store_true", help="replace an existing bank at --out")


def main(args) -> int:
    common = {"dtype": args.dtype, "progress": not args.no_progress, "overwrite": args.overwrite}
    try:
        if args.dataset == "ucf":
            out = import_ucf(args.train_list, args.test_list, args.annotations, args.out,
                             feature_root=args.feature_root, **common)
        elif args.dataset == "xd":
            out = import_xd(args.train_list, args.test_list, args.annotations, args.out,
                            audio_train_list=args.audio_train_list, audio_test_list=args.audio_test_list,
                            feature_root=args.feature_root, **common)
        else:
            out = import_tad(args.train_labels, args.test_labels, args.feature_root, args.out,
                             pattern=args.pattern, **common)
    except (FeatureImportError, AnnotationError) as err:
        print(f"cupl import {args.dataset}: {err}")
        return 1
    print(f"wrote {out}")
    return 0
