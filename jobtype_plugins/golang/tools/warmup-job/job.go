// Package warmup is a stand-in job: the image's shared layer builds the wrapper against it
// once, so the standard library packages the wrapper uses are compiled before any real job is.
package warmup

func Perform(input map[string]interface{}) (interface{}, error) { return input, nil }
