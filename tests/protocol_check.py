"""One check shared by the converter tests: a written dataset follows the protocol."""
import numpy as np

from ignore.data.protocol import observe_positives, split_train_val


def assert_follows_protocol(dataset, train_images, train_labels, test_images, test_labels):
    """train+val are the official-train rows split by split_train_val, observed labels are
    observe_positives of the whole official-train matrix; test is the official test set."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    train_index, val_index = split_train_val(len(train_images))
    train_observed = observe_positives(train_labels)
    for name, index in (("train", train_index), ("val", val_index)):
        split = dataset.splits[name]
        assert split["image"] == [train_images[i] for i in index]
        np.testing.assert_array_equal(np.array(split["labels"]), train_labels[index])
        np.testing.assert_array_equal(np.array(split["observed"]), train_observed[index])
    test = dataset.splits["test"]
    assert test["image"] == list(test_images)
    np.testing.assert_array_equal(np.array(test["labels"]), test_labels)
    np.testing.assert_array_equal(np.array(test["observed"]), observe_positives(test_labels))
