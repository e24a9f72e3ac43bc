#include "test.h"
int main(void){return bf_test_done("x");}
